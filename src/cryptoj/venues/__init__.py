"""Exchange adapters: Coinbase Advanced Trade and the local simulator."""
