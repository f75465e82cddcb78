"""``python -m harness.sim``: the simulator without the rest of the CLI."""

from harness.sim.command import sim

if __name__ == "__main__":
    sim(prog_name="harness sim")
