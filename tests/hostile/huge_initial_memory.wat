;; expect: load_error
;; message: cannot load policy `huge-initial-memory@1`: declares 65536 pages (4294967296 bytes) of initial memory, over the limit of 16777216 bytes
;; Declares 4 GiB of initial memory.
(module
  (memory (export "memory") 65536)
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "rulehost_authorize") (param i32 i32) (result i64) i64.const 0))
