"""The records cache: tables, migrations, the record store, merge rules, cursors, locks."""
