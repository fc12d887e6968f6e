"""ssmshell: AWS Session Manager and ECS Exec in pure Python."""

__version__ = "0.1.0"
