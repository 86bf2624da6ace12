"""woe_core: the WOE anchor model (p_slow21) on PostgreSQL, usable without the app."""

__version__ = "0.1.0"
