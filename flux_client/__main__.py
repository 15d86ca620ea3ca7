import sys

from flux_client.cli import main

sys.exit(main())
