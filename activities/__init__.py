"""Activities: all of tidings' I/O (database, rendering, providers) lives here."""
