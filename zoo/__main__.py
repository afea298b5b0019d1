from zoo.cli import app

app(prog_name="zoo")
