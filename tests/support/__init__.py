"""Test support: real servers (the embedded Redis, a throwaway Postgres) and the small
builders several test files share (an integrations folder, database rows)."""
