"""The operator in its own process, started the way `trainserve run --all-namespaces --standalone` starts it, but
with the API server's URL given directly.

`trainserve run` has no flag for the URL (``OperatorSettings.api_server`` is only settable in code), and through
a kubeconfig file it cannot log in: the operator's own ``kopf.OperatorRegistry()`` has none of Kopf's fallback
login handlers, which only ``kopf.SmartOperatorRegistry`` adds (Kopf: "Ran out of valid credentials"). The
benchmark's ``--via-cli`` option uses the real command with ``KUBECONFIG`` for when that is fixed.

    python -m benchmarks.operator_process API_SERVER_URL METRICS_PORT
"""

from __future__ import annotations

import sys

from trainserve.runner import run
from trainserve.settings import settings_from


def main() -> None:
    url, metrics_port = sys.argv[1], int(sys.argv[2])
    # what cmd_run does with `--all-namespaces --standalone --metrics-port N`, plus the URL
    settings = settings_from(all_namespaces=True, standalone=True, metrics_port=metrics_port, api_server=url)
    run(settings)


if __name__ == "__main__":
    main()
