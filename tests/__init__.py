"""The package's tests: grading of learner work (test_grading), repository checks, and one folder per chapter."""
