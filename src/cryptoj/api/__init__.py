"""Operator interfaces: the REST API and dashboard (:mod:`cryptoj.api.app`), its auth and the engine view."""
