import unittest

from units import celsius_to_fahrenheit, fahrenheit_to_celsius, km_to_miles


class DistanceTest(unittest.TestCase):
    def test_km_to_miles(self):
        self.assertAlmostEqual(km_to_miles(1.609344), 1.0)


class TemperatureTest(unittest.TestCase):
    def test_fahrenheit_to_celsius(self):
        self.assertAlmostEqual(fahrenheit_to_celsius(32), 0.0)

    def test_celsius_to_fahrenheit(self):
        self.assertAlmostEqual(celsius_to_fahrenheit(100), 212.0)
        self.assertAlmostEqual(celsius_to_fahrenheit(0), 32.0)
        self.assertAlmostEqual(celsius_to_fahrenheit(-40), -40.0)
        self.assertAlmostEqual(celsius_to_fahrenheit(37.5), 99.5)


if __name__ == "__main__":
    unittest.main()
