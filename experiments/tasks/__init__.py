"""One package per experiment family; `config.task` names its task module."""
