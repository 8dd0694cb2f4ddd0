;; expect: fail_closed OutputOutOfBounds
;; message: output at 60000 of 10000 bytes lies outside the policy's memory of 65536 bytes
;; Answers a reply at 60000 of 10000 bytes, past the end of its 64 KiB memory.
(module
  (memory (export "memory") 1)
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "rulehost_authorize") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 60000) (i64.const 32)) (i64.const 10000))))
