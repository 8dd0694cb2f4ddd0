;; expect: fail_closed OutputTooLarge
;; message: output of 2097152 bytes exceeds the limit of 1048576 bytes
;; Answers a 2 MiB reply, over the 1 MiB output limit.
(module
  (memory (export "memory") 40)
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "rulehost_authorize") (param i32 i32) (result i64) i64.const 2097152))
