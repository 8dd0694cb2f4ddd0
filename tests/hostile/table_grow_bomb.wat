;; expect: fail_closed TableLimit
;; message: table limit of 10000 elements exceeded: the policy asked for 10001 elements
;; Grows a table until something gives.
(module
  (memory (export "memory") 1)
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (table 1 funcref)
  (func (export "rulehost_authorize") (param i32 i32) (result i64)
    (loop (drop (table.grow (ref.null func) (i32.const 1000))) (br 0))
    i64.const 0))
