"""An app whose import fails, as a typo in a real app would."""
import this_module_does_not_exist  # noqa: F401

app = None
