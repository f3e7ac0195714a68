"""Delivery adapters: one module per external system, behind ``adapters.base``."""
