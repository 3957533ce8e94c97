;; supfuzz: hands a request's bytes to theater:simple/supervisor as raw arguments, for
;; tests/test_node_fault_props.py (random supervisor calls from an actor). Its manifest must
;; grant the supervisor handler.
;;
;; handle-request: the message's first byte picks the call, the rest are its arguments; the reply
;; starts with "o" (ok) or "e" (err, then the error text). A message too short for its call, or
;; an unknown first byte, is answered "?".
;;   s H u32le N MANIFEST(N bytes) INIT -> spawn(MANIFEST, H ? some(INIT) : none)   ("o" id / "e" text)
;;   r H u32le N MANIFEST(N bytes) INIT -> resume(MANIFEST, H ? some(INIT) : none)  (the same)
;;   l                                  -> list-children    ("o" then the ids joined with "\n")
;;   x ID                               -> stop-child       ("o" / "e" text)
;;   R ID                               -> restart-child    ("o" / "e" text)
;;   g ID                               -> get-child-state  ("on" none / "os" then the state / "e" text)
;;   v ID                               -> get-child-events ("o" then the count u32le / "e" text)
;; H is a byte: 0 for none, anything else for some. MANIFEST and ID go to the host as strings:
;; the sender must make them UTF-8 (the canonical ABI traps on anything else).
;; init, handle-send: keep the state.
;;
;; Memory: a bump allocator (growing memory as needed) reset by every export's post-return;
;; 1024.. the export return area, 1088.. the import return area, 8192.. the heap.
(component
  (import "theater:simple/supervisor" (instance $sup
    (type $event (record
      (field "hash" (list u8)) (field "parent-hash" (option (list u8))) (field "event-type" string)
      (field "data" (list u8)) (field "timestamp" u64) (field "description" (option string))))
    (export "chain-event" (type $event-e (eq $event)))
    (export "spawn" (func (param "manifest" string) (param "init-bytes" (option (list u8)))
      (result (result string (error string)))))
    (export "resume" (func (param "manifest" string) (param "init-state" (option (list u8)))
      (result (result string (error string)))))
    (export "list-children" (func (result (list string))))
    (export "stop-child" (func (param "child-id" string) (result (result (error string)))))
    (export "restart-child" (func (param "child-id" string) (result (result (error string)))))
    (export "get-child-state" (func (param "child-id" string)
      (result (result (option (list u8)) (error string)))))
    (export "get-child-events" (func (param "child-id" string)
      (result (result (list $event-e) (error string)))))))

  (core module $mem
    (memory (export "memory") 2)
    (global $next (mut i32) (i32.const 8192))
    (func (export "realloc") (param $old i32) (param $old-size i32) (param $align i32) (param $size i32) (result i32)
      (local $p i32) (local $end i32) (local $have i32)
      (local.set $p (i32.and
        (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $p) (local.get $size)))
      (local.set $have (i32.shl (memory.size) (i32.const 16)))
      (if (i32.gt_u (local.get $end) (local.get $have))
        (then
          (if (i32.eq
                (memory.grow (i32.shr_u
                  (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535))
                  (i32.const 16)))
                (i32.const -1))
            (then unreachable))))
      (global.set $next (local.get $end))
      (if (local.get $old-size)
        (then (memory.copy (local.get $p) (local.get $old)
          (select (local.get $old-size) (local.get $size)
            (i32.lt_u (local.get $old-size) (local.get $size))))))
      (local.get $p))
    (func (export "reset") (param i32)
      (global.set $next (i32.const 8192))))
  (core instance $mem (instantiate $mem))
  (alias core export $mem "memory" (core memory $memory))
  (alias core export $mem "realloc" (core func $realloc))

  (core func $spawn (canon lower (func $sup "spawn") (memory $memory) (realloc $realloc)))
  (core func $resume (canon lower (func $sup "resume") (memory $memory) (realloc $realloc)))
  (core func $list-children (canon lower (func $sup "list-children") (memory $memory) (realloc $realloc)))
  (core func $stop-child (canon lower (func $sup "stop-child") (memory $memory) (realloc $realloc)))
  (core func $restart-child (canon lower (func $sup "restart-child") (memory $memory) (realloc $realloc)))
  (core func $get-child-state (canon lower (func $sup "get-child-state") (memory $memory) (realloc $realloc)))
  (core func $get-child-events (canon lower (func $sup "get-child-events") (memory $memory) (realloc $realloc)))

  (core module $actor
    (import "mem" "memory" (memory 1))
    (import "mem" "realloc" (func $alloc (param i32 i32 i32 i32) (result i32)))
    ;; spawn / resume(manifest ptr, len, init disc, ptr, len, return area): result<string, string>
    ;;   disc u8 @0, string ptr @4, len @8
    (import "sup" "spawn" (func $spawn (param i32 i32 i32 i32 i32 i32)))
    (import "sup" "resume" (func $resume (param i32 i32 i32 i32 i32 i32)))
    ;; list-children(return area): list<string>: ptr @0, count @4; elements are (ptr, len) pairs
    (import "sup" "list-children" (func $list-children (param i32)))
    ;; stop-child / restart-child(id ptr, len, return area): result<_, string>: disc @0, ptr @4, len @8
    (import "sup" "stop-child" (func $stop-child (param i32 i32 i32)))
    (import "sup" "restart-child" (func $restart-child (param i32 i32 i32)))
    ;; get-child-state(id ptr, len, return area): result<option<list<u8>>, string>:
    ;;   disc @0; ok: option disc @4, ptr @8, len @12; err: ptr @4, len @8
    (import "sup" "get-child-state" (func $get-child-state (param i32 i32 i32)))
    ;; get-child-events(id ptr, len, return area): result<list<chain-event>, string>:
    ;;   disc @0; ok: list ptr @4, count @8; err: ptr @4, len @8
    (import "sup" "get-child-events" (func $get-child-events (param i32 i32 i32)))
    (global $ret i32 (i32.const 1024))
    (global $iret i32 (i32.const 1088))
    (global $len (mut i32) (i32.const 0))

    (func $ok (param $d i32) (param $p i32) (param $l i32) (result i32)
      (i32.store8 (global.get $ret) (i32.const 0))
      (i32.store8 offset=4 (global.get $ret) (local.get $d))
      (i32.store offset=8 (global.get $ret) (local.get $p))
      (i32.store offset=12 (global.get $ret) (local.get $l))
      (global.get $ret))

    ;; ok((state, (some(tag ++ [p, p+l)),)))
    (func $reply (param $d i32) (param $sp i32) (param $sl i32) (param $tag i32) (param $p i32) (param $l i32)
          (result i32)
      (local $buf i32)
      (local.set $buf (call $alloc (i32.const 0) (i32.const 0) (i32.const 1) (i32.add (local.get $l) (i32.const 1))))
      (i32.store8 (local.get $buf) (local.get $tag))
      (memory.copy (i32.add (local.get $buf) (i32.const 1)) (local.get $p) (local.get $l))
      (drop (call $ok (local.get $d) (local.get $sp) (local.get $sl)))
      (i32.store8 offset=16 (global.get $ret) (i32.const 1))
      (i32.store offset=20 (global.get $ret) (local.get $buf))
      (i32.store offset=24 (global.get $ret) (i32.add (local.get $l) (i32.const 1)))
      (global.get $ret))

    ;; the reply for a result<string, string> or result<_, string> at $iret ("o"/"e" ++ the string;
    ;; for result<_, string> the ok string is empty: $unit)
    (func $reply-result (param $d i32) (param $sp i32) (param $sl i32) (param $unit i32) (result i32)
      (if (i32.load8_u (global.get $iret))
        (then (return (call $reply (local.get $d) (local.get $sp) (local.get $sl) (i32.const 101)
                        (i32.load offset=4 (global.get $iret)) (i32.load offset=8 (global.get $iret))))))
      (if (local.get $unit)
        (then (return (call $reply (local.get $d) (local.get $sp) (local.get $sl) (i32.const 111)
                        (i32.const 0) (i32.const 0)))))
      (call $reply (local.get $d) (local.get $sp) (local.get $sl) (i32.const 111)
        (i32.load offset=4 (global.get $iret)) (i32.load offset=8 (global.get $iret))))

    ;; the list<string> at $iret joined with "\n"; length in $len
    (func $join (result i32)
      (local $arr i32) (local $n i32) (local $i i32) (local $e i32) (local $total i32)
      (local $buf i32) (local $at i32)
      (local.set $arr (i32.load (global.get $iret)))
      (local.set $n (i32.load offset=4 (global.get $iret)))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (local.set $e (i32.add (local.get $arr) (i32.shl (local.get $i) (i32.const 3))))
          (local.set $total (i32.add (local.get $total) (i32.load offset=4 (local.get $e))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
      (if (local.get $n)
        (then (local.set $total (i32.add (local.get $total) (i32.sub (local.get $n) (i32.const 1))))))
      (local.set $buf (call $alloc (i32.const 0) (i32.const 0) (i32.const 1) (local.get $total)))
      (local.set $at (local.get $buf))
      (local.set $i (i32.const 0))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (if (local.get $i)
            (then
              (i32.store8 (local.get $at) (i32.const 10))
              (local.set $at (i32.add (local.get $at) (i32.const 1)))))
          (local.set $e (i32.add (local.get $arr) (i32.shl (local.get $i) (i32.const 3))))
          (memory.copy (local.get $at) (i32.load (local.get $e)) (i32.load offset=4 (local.get $e)))
          (local.set $at (i32.add (local.get $at) (i32.load offset=4 (local.get $e))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
      (global.set $len (local.get $total))
      (local.get $buf))

    (func (export "init") (param $d i32) (param $p i32) (param $l i32) (result i32)
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-send") (param $d i32) (param $p i32) (param $l i32)
          (param $mp i32) (param $ml i32) (result i32)
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-request") (param $d i32) (param $p i32) (param $l i32)
          (param $idp i32) (param $idl i32) (param $mp i32) (param $ml i32) (result i32)
      (local $op i32) (local $n i32) (local $rest i32) (local $restl i32) (local $buf i32)
      (if (i32.eqz (local.get $ml))
        (then (return (call $reply (local.get $d) (local.get $p) (local.get $l) (i32.const 63)
                        (i32.const 0) (i32.const 0)))))
      (local.set $op (i32.load8_u (local.get $mp)))
      (local.set $rest (i32.add (local.get $mp) (i32.const 1)))
      (local.set $restl (i32.sub (local.get $ml) (i32.const 1)))
      ;; "s" / "r": H u32le N MANIFEST INIT
      (if (i32.or (i32.eq (local.get $op) (i32.const 115)) (i32.eq (local.get $op) (i32.const 114)))
        (then
          (if (i32.lt_u (local.get $ml) (i32.const 6))
            (then (return (call $reply (local.get $d) (local.get $p) (local.get $l) (i32.const 63)
                            (i32.const 0) (i32.const 0)))))
          (local.set $n (i32.load (i32.add (local.get $mp) (i32.const 2))))
          (if (i32.gt_u (local.get $n) (i32.sub (local.get $ml) (i32.const 6)))
            (then (return (call $reply (local.get $d) (local.get $p) (local.get $l) (i32.const 63)
                            (i32.const 0) (i32.const 0)))))
          ;; INIT: [mp + 6 + n, mp + ml)
          (local.set $rest (i32.add (i32.add (local.get $mp) (i32.const 6)) (local.get $n)))
          (local.set $restl (i32.sub (i32.sub (local.get $ml) (i32.const 6)) (local.get $n)))
          (if (i32.eq (local.get $op) (i32.const 115))
            (then (call $spawn (i32.add (local.get $mp) (i32.const 6)) (local.get $n)
                    (i32.ne (i32.load8_u offset=1 (local.get $mp)) (i32.const 0))
                    (local.get $rest) (local.get $restl) (global.get $iret)))
            (else (call $resume (i32.add (local.get $mp) (i32.const 6)) (local.get $n)
                    (i32.ne (i32.load8_u offset=1 (local.get $mp)) (i32.const 0))
                    (local.get $rest) (local.get $restl) (global.get $iret))))
          (return (call $reply-result (local.get $d) (local.get $p) (local.get $l) (i32.const 0)))))
      ;; "l"
      (if (i32.eq (local.get $op) (i32.const 108))
        (then
          (call $list-children (global.get $iret))
          (local.set $buf (call $join))
          (return (call $reply (local.get $d) (local.get $p) (local.get $l) (i32.const 111)
                    (local.get $buf) (global.get $len)))))
      ;; "x" ID
      (if (i32.eq (local.get $op) (i32.const 120))
        (then
          (call $stop-child (local.get $rest) (local.get $restl) (global.get $iret))
          (return (call $reply-result (local.get $d) (local.get $p) (local.get $l) (i32.const 1)))))
      ;; "R" ID
      (if (i32.eq (local.get $op) (i32.const 82))
        (then
          (call $restart-child (local.get $rest) (local.get $restl) (global.get $iret))
          (return (call $reply-result (local.get $d) (local.get $p) (local.get $l) (i32.const 1)))))
      ;; "g" ID
      (if (i32.eq (local.get $op) (i32.const 103))
        (then
          (call $get-child-state (local.get $rest) (local.get $restl) (global.get $iret))
          (if (i32.load8_u (global.get $iret))
            (then (return (call $reply-result (local.get $d) (local.get $p) (local.get $l) (i32.const 1)))))
          (if (i32.eqz (i32.load8_u offset=4 (global.get $iret)))
            (then
              (i32.store8 (i32.const 1152) (i32.const 110))
              (return (call $reply (local.get $d) (local.get $p) (local.get $l) (i32.const 111)
                        (i32.const 1152) (i32.const 1)))))
          ;; "os" ++ state: the "s" goes in front of the state's bytes through a second copy
          (local.set $n (i32.load offset=12 (global.get $iret)))
          (local.set $buf (call $alloc (i32.const 0) (i32.const 0) (i32.const 1) (i32.add (local.get $n) (i32.const 1))))
          (i32.store8 (local.get $buf) (i32.const 115))
          (memory.copy (i32.add (local.get $buf) (i32.const 1)) (i32.load offset=8 (global.get $iret)) (local.get $n))
          (return (call $reply (local.get $d) (local.get $p) (local.get $l) (i32.const 111)
                    (local.get $buf) (i32.add (local.get $n) (i32.const 1))))))
      ;; "v" ID
      (if (i32.eq (local.get $op) (i32.const 118))
        (then
          (call $get-child-events (local.get $rest) (local.get $restl) (global.get $iret))
          (if (i32.load8_u (global.get $iret))
            (then (return (call $reply-result (local.get $d) (local.get $p) (local.get $l) (i32.const 1)))))
          (i32.store (i32.const 1152) (i32.load offset=8 (global.get $iret)))
          (return (call $reply (local.get $d) (local.get $p) (local.get $l) (i32.const 111)
                    (i32.const 1152) (i32.const 4)))))
      (call $reply (local.get $d) (local.get $p) (local.get $l) (i32.const 63) (i32.const 0) (i32.const 0))))
  (core instance $a (instantiate $actor
    (with "mem" (instance $mem))
    (with "sup" (instance
      (export "spawn" (func $spawn))
      (export "resume" (func $resume))
      (export "list-children" (func $list-children))
      (export "stop-child" (func $stop-child))
      (export "restart-child" (func $restart-child))
      (export "get-child-state" (func $get-child-state))
      (export "get-child-events" (func $get-child-events))))))

  (func $init (param "state" (option (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "init") (memory $memory) (realloc $realloc)
      (post-return (core func $mem "reset"))))
  (func $handle-send (param "state" (option (list u8))) (param "params" (tuple (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "handle-send") (memory $memory) (realloc $realloc)
      (post-return (core func $mem "reset"))))
  (func $handle-request (param "state" (option (list u8))) (param "params" (tuple string (list u8)))
    (result (result (tuple (option (list u8)) (tuple (option (list u8)))) (error string)))
    (canon lift (core func $a "handle-request") (memory $memory) (realloc $realloc)
      (post-return (core func $mem "reset"))))

  (instance $actor-exports (export "init" (func $init)))
  (instance $msc-exports
    (export "handle-send" (func $handle-send))
    (export "handle-request" (func $handle-request)))
  (export "theater:simple/actor" (instance $actor-exports))
  (export "theater:simple/message-server-client" (instance $msc-exports))
)
