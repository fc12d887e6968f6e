"""Session types on top of a :class:`~ssmshell.channel.Channel`: shell, command, ports, stdio."""
