"""Coinbase Advanced Trade adapter: sans-IO protocol, CDP JWT auth, REST client."""
