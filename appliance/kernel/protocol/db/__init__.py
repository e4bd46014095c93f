"""PostgreSQL schema: versioned migrations shipped as SQL files in ``migrations/``."""
