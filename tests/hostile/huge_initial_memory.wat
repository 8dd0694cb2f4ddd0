;; expect: load_error
;; message: cannot load policy `huge-initial-memory@1`: cannot compile: module memory does not fit in pooling allocator requirements: memory index 0 is unsupported in this pooling allocator configuration: memory has a minimum byte size of 4294967296 which exceeds the limit of 0x1000000 bytes
;; Declares 4 GiB of initial memory.
(module
  (memory (export "memory") 65536)
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "rulehost_authorize") (param i32 i32) (result i64) i64.const 0))
