"""The Redis side: client and URL handling, group reads, reclaims, acks, dead letters, stream maintenance.

Modules here import redis-py as ``redis`` (absolute imports): the name of this
package never shadows it.
"""
