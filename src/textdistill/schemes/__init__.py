from .offline import LiveTeacher

__all__ = ["LiveTeacher"]
