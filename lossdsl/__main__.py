"""`python -m lossdsl` is the `lossdsl` command."""

from lossdsl.cli import main

raise SystemExit(main())
