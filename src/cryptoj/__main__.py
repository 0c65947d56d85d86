"""``python -m cryptoj`` runs the same CLI as the ``cryptoj`` console script."""

from cryptoj.cli import app

if __name__ == "__main__":
    app(prog_name="cryptoj")
