import sys

from mammoflow.cli import main

sys.exit(main())
