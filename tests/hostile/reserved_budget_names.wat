;; expect: load_error
;; message: cannot load policy `reserved-budget-names@1`: exports `rulehost:budget`, a name the host reserves
;; Exports the global the host adds to count the CPU budget, as if to hand
;; the host a budget of its own choosing.
(module
  (memory (export "memory") 1)
  (global (export "rulehost:budget") (mut i64) (i64.const 9223372036854775807))
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "rulehost_authorize") (param i32 i32) (result i64) i64.const 0))
