"""Unit conversions."""

KM_PER_MILE = 1.609344


def km_to_miles(km):
    """Convert kilometres to miles.

    >>> round(km_to_miles(1.609344), 6)
    1.0
    """
    return km / KM_PER_MILE


def fahrenheit_to_celsius(f):
    """Convert degrees Fahrenheit to degrees Celsius.

    >>> fahrenheit_to_celsius(212)
    100.0
    """
    return (f - 32) * 5 / 9


def celsius_to_fahrenheit(c):
    """Convert degrees Celsius to degrees Fahrenheit: multiply by 9/5, then add 32.

    >>> celsius_to_fahrenheit(100)
    212.0
    >>> celsius_to_fahrenheit(-40)
    -40.0
    """
    return None
