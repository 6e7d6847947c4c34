# Redis from Debian's own package, for the container test path where no image registry is
# reachable. Behaves like the official image for what the tests use: `redis-server` as the
# command, listening on 6379 without protected mode, /data as the working directory.
ARG BASE_IMAGE=streamproc-test/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o redis -g redis /data
USER redis
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
