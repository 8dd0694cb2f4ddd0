;; expect: fail_closed MalformedOutput
;; message: output is not valid UTF-8: invalid utf-8 sequence of 1 bytes from index 0
;; Answers two bytes that are not UTF-8.
(module
  (memory (export "memory") 1)
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (data (i32.const 0) "\ff\fe")
  (func (export "rulehost_authorize") (param i32 i32) (result i64) i64.const 2))
