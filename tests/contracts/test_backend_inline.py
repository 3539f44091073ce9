from .backend_contract import BackendContract


class TestInline(BackendContract):
    backend_name = "inline"
