from wanforge.cli import app

app(prog_name="wanforge")
