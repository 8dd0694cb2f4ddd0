;; expect: fail_closed StackOverflow
;; message: call stack exhausted
;; Recurses without end: the call stack overflows.
(module
  (memory (export "memory") 1)
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (func $down (param i32) (result i32)
    (call $down (i32.add (local.get 0) (i32.const 1))))
  (func (export "rulehost_authorize") (param i32 i32) (result i64)
    (drop (call $down (i32.const 0)))
    i64.const 0))
