;; expect: load_error
;; message: cannot load policy `huge-data-segment@1`: instantiation failed: wasm trap: out of bounds memory access
;; Places a data segment 256 MiB into a memory of one page.
(module
  (memory (export "memory") 1)
  (data (i32.const 268435456) "boom")
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "rulehost_authorize") (param i32 i32) (result i64) i64.const 0))
