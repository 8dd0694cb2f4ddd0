;; expect: fail_closed FuelExhausted
;; message: cpu budget of 20000000 fuel exhausted
;; An authorize hook that never returns: the CPU budget stops it.
(module
  (memory (export "memory") 1)
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "rulehost_authorize") (param i32 i32) (result i64)
    (loop (br 0))
    i64.const 0))
