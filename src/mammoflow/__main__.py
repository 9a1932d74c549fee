"""`python -m mammoflow <command>`: what every rule runs."""

import os
import sys

from mammoflow.cli import main

if os.environ.get("MAMMOFLOW_RECORD_MODULES"):
    # Tests only (tests/test_code_triggers.py): which of mammoflow's modules this job loaded, written at
    # exit to that folder, to check that the code trigger's static closure holds every one of them.
    import atexit
    import json

    def _record() -> None:
        loaded = sorted({"mammoflow.__main__", *(m for m in sys.modules if m.split(".")[0] == "mammoflow")})
        record = {
            "command": next((a for a in sys.argv[1:] if not a.startswith("-")), None),
            "modules": loaded,
        }
        path = os.path.join(os.environ["MAMMOFLOW_RECORD_MODULES"], f"{os.getpid()}.json")
        with open(path, "w") as handle:
            json.dump(record, handle)

    atexit.register(_record)

sys.exit(main())
