"""`python -m genkit ...`: the same command line as `genkit ...`."""
from genkit.cli import main

raise SystemExit(main())
