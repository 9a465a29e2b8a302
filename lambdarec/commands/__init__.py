"""CLI command modules; each exposes `register(app: typer.Typer)`."""
