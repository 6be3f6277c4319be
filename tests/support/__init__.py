"""Real servers for the tests: the embedded Redis binary and a throwaway Postgres."""
