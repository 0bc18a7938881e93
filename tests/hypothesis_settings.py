"""The Hypothesis settings the property tests share: reproducible (derandomized, no example
database) and without deadlines, since a shared CI machine's timing says nothing about the code."""

from hypothesis import HealthCheck, settings


def reproducible(max_examples: int):
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
