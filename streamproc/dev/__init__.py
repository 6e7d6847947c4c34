"""Development helpers, not used by the daemon: throwaway servers, synthetic traffic, the demo."""
