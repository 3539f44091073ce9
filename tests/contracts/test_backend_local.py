from .backend_contract import BackendContract


class TestLocal(BackendContract):
    backend_name = "local"
