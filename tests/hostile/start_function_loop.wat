;; expect: load_error
;; message: cannot load policy `start-function-loop@1`: instantiation failed: cpu budget of 20000000 fuel exhausted
;; The start function never returns: the module cannot even be instantiated.
(module
  (memory (export "memory") 1)
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (func $spin (loop (br 0)))
  (start $spin)
  (func (export "rulehost_authorize") (param i32 i32) (result i64) i64.const 0))
