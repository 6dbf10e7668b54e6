from .tasks import Task, get_task, TASKS
from .readers import Examples, load_examples, read_table

__all__ = ["Task", "get_task", "TASKS", "Examples", "load_examples", "read_table"]
