"""`photon eval`'s default run names say what was pruned (an unpruned run once read "(its)")."""

from photonlib.cli.evaluate import run_label


def test_run_label_names_the_pruning_that_ran():
    assert run_label("final", "its", None, "hard") == "final (its)"
    assert run_label("final", "its", None, "none") == "final (no pruning)"
    assert run_label("final", "none", None, "hard") == "final (no pruning)"
    assert run_label("final", "random", 0.0504, "hard") == "final (random 0.0504)"
    assert run_label("final", "its", None, "soft") == "final (its, soft)"
