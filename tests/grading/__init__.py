"""The grader's own tests: the command line, reset, the harness."""
