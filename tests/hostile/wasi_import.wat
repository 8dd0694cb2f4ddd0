;; expect: load_error
;; message: cannot load policy `wasi-import@1`: imports `wasi_snapshot_preview1`.`fd_write`, but a policy may import only `rulehost`.`log`
;; Imports WASI to write to a file descriptor.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "rulehost_authorize") (param i32 i32) (result i64) i64.const 0))
