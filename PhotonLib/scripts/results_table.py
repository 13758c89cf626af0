"""One Table-1 shaped Markdown table from several `photon eval` results files, a column per run.

    python PhotonLib/scripts/results_table.py its.json unpruned.json visionzip.json > table.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from photonlib.evaluation.report import markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.json files written by photon eval")
    parser.add_argument("--rule", choices=("letter_rule", "exact_match"), action="append", help="accuracy rule(s) to show (default both)")
    arguments = parser.parse_args()
    runs = [json.loads(path.read_text()) for path in arguments.results]
    print(markdown_table(runs, accuracy_rules=arguments.rule or ("letter_rule", "exact_match")))


if __name__ == "__main__":
    main()
