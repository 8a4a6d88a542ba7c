"""The one error type for bad user input.

Its message is a single line that names the offending field first, so the CLI can print
it as-is and exit with status 2.
"""


class InputError(ValueError):
    """Invalid user input: ``field: problem``."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)
