import unittest

from text import slugify, word_count


class WordCountTest(unittest.TestCase):
    def test_words(self):
        self.assertEqual(word_count("the quick  brown fox"), 4)

    def test_empty(self):
        self.assertEqual(word_count(""), 0)


class SlugifyTest(unittest.TestCase):
    def test_simple(self):
        self.assertEqual(slugify("Hello, World!"), "hello-world")

    def test_runs_and_edges(self):
        self.assertEqual(slugify("  Python 3 -- Tips  "), "python-3-tips")

    def test_empty(self):
        self.assertEqual(slugify(""), "")


if __name__ == "__main__":
    unittest.main()
