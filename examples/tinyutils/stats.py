"""Simple statistics on lists of numbers."""


def mean(values):
    """Return the average of ``values``. Raise ValueError if ``values`` is empty.

    >>> mean([1, 2, 3, 4])
    2.5
    """
    if not values:
        raise ValueError("mean of an empty list")
    return sum(values) / len(values)


def median(values):
    """Return the middle value of ``values`` once sorted.

    With an even number of values, return the average of the two middle ones.
    Raise ValueError if ``values`` is empty. Do not change the list passed in.

    >>> median([3, 1, 2])
    2
    >>> median([4, 1, 3, 2])
    2.5
    """
    return None
