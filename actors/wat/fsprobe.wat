;; fsprobe: calls each theater:simple/filesystem function, for the filesystem handler's tests.
;;   handle-request, by the message's first byte (the rest is the path):
;;     'r' path            read-file   -> the file's content
;;     'n' path            read-file   -> the content's size in decimal (reads too big to reply)
;;     'w' path 0x00 data  write-file  -> "ok"
;;     'a' path 0x00 data  append-file -> "ok"
;;     'x' / 'f' / 'd'     exists / is-file / is-dir -> "1" or "0"
;;     'c' / 'u' / 'v'     create-dir / remove-file / remove-dir -> "ok"
;;     'l' path            list-dir    -> the names joined by "\n", a directory's with a trailing "/"
;;     'm' path            metadata    -> "size=N file=1 dir=0"
;;   any host err -> "ERR:" + its message; an unknown opcode -> "ERR:unknown op"
;;   init and handle-send keep the state.
;; Memory: a bump allocator (growing the memory as needed) reset by every export's post-return;
;; host-call results land at 512, the export's return area is at 1024 (see echo.wat's cheat sheet).
(component
  (import "theater:simple/filesystem" (instance $fs
    (type $entry (record (field "name" string) (field "is-file" bool) (field "is-dir" bool)))
    (export "file-entry" (type $entry-e (eq $entry)))
    (type $meta (record
      (field "name" string) (field "path" string) (field "size" u64)
      (field "is-file" bool) (field "is-dir" bool)
      (field "created" (option u64)) (field "modified" (option u64)) (field "accessed" (option u64))))
    (export "file-metadata" (type $meta-e (eq $meta)))
    (export "read-file" (func (param "path" string) (result (result (list u8) (error string)))))
    (export "write-file" (func (param "path" string) (param "content" (list u8)) (result (result (error string)))))
    (export "append-file" (func (param "path" string) (param "content" (list u8)) (result (result (error string)))))
    (export "exists" (func (param "path" string) (result (result bool (error string)))))
    (export "is-file" (func (param "path" string) (result (result bool (error string)))))
    (export "is-dir" (func (param "path" string) (result (result bool (error string)))))
    (export "create-dir" (func (param "path" string) (result (result (error string)))))
    (export "remove-file" (func (param "path" string) (result (result (error string)))))
    (export "remove-dir" (func (param "path" string) (result (result (error string)))))
    (export "list-dir" (func (param "path" string) (result (result (list $entry-e) (error string)))))
    (export "metadata" (func (param "path" string) (result (result $meta-e (error string)))))))

  (core module $mem
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 8192))
    (func (export "realloc") (param $old i32) (param $old-size i32) (param $align i32) (param $size i32) (result i32)
      (local $p i32) (local $end i32) (local $have i32)
      (local.set $p (i32.and
        (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $p) (local.get $size)))
      (if (i32.lt_u (local.get $end) (local.get $p)) (then unreachable))
      (local.set $have (i32.shl (memory.size) (i32.const 16)))
      (if (i32.gt_u (local.get $end) (local.get $have))
        (then
          (if (i32.eq (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have))
                                                        (i32.const 65535))
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

  (core func $read (canon lower (func $fs "read-file") (memory $memory) (realloc $realloc)))
  (core func $write (canon lower (func $fs "write-file") (memory $memory) (realloc $realloc)))
  (core func $append (canon lower (func $fs "append-file") (memory $memory) (realloc $realloc)))
  (core func $exists (canon lower (func $fs "exists") (memory $memory) (realloc $realloc)))
  (core func $is-file (canon lower (func $fs "is-file") (memory $memory) (realloc $realloc)))
  (core func $is-dir (canon lower (func $fs "is-dir") (memory $memory) (realloc $realloc)))
  (core func $create-dir (canon lower (func $fs "create-dir") (memory $memory) (realloc $realloc)))
  (core func $remove-file (canon lower (func $fs "remove-file") (memory $memory) (realloc $realloc)))
  (core func $remove-dir (canon lower (func $fs "remove-dir") (memory $memory) (realloc $realloc)))
  (core func $list-dir (canon lower (func $fs "list-dir") (memory $memory) (realloc $realloc)))
  (core func $metadata (canon lower (func $fs "metadata") (memory $memory) (realloc $realloc)))

  (core module $actor
    (import "mem" "memory" (memory 1))
    (import "mem" "realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    (import "fs" "read-file" (func $read (param i32 i32 i32)))
    (import "fs" "write-file" (func $write (param i32 i32 i32 i32 i32)))
    (import "fs" "append-file" (func $append (param i32 i32 i32 i32 i32)))
    (import "fs" "exists" (func $exists (param i32 i32 i32)))
    (import "fs" "is-file" (func $is-file (param i32 i32 i32)))
    (import "fs" "is-dir" (func $is-dir (param i32 i32 i32)))
    (import "fs" "create-dir" (func $create-dir (param i32 i32 i32)))
    (import "fs" "remove-file" (func $remove-file (param i32 i32 i32)))
    (import "fs" "remove-dir" (func $remove-dir (param i32 i32 i32)))
    (import "fs" "list-dir" (func $list-dir (param i32 i32 i32)))
    (import "fs" "metadata" (func $metadata (param i32 i32 i32)))
    (data (i32.const 56) "01")
    (data (i32.const 64) "ok")
    (data (i32.const 72) "size=")
    (data (i32.const 80) " file=")
    (data (i32.const 88) " dir=")
    (data (i32.const 96) "ERR:")
    (data (i32.const 104) "ERR:unknown op")
    (data (i32.const 128) "ERR:empty request")
    ;; where host calls write their result
    (global $res i32 (i32.const 512))
    ;; the export's return area
    (global $ret i32 (i32.const 1024))
    ;; the state of the current call, handed back unchanged
    (global $sd (mut i32) (i32.const 0))
    (global $sp (mut i32) (i32.const 0))
    (global $sl (mut i32) (i32.const 0))

    (func $alloc (param $size i32) (result i32)
      (call $realloc (i32.const 0) (i32.const 0) (i32.const 1) (local.get $size)))

    (func $ok (param $d i32) (param $p i32) (param $l i32) (result i32)
      (i32.store8 (global.get $ret) (i32.const 0))
      (i32.store8 offset=4 (global.get $ret) (local.get $d))
      (i32.store offset=8 (global.get $ret) (local.get $p))
      (i32.store offset=12 (global.get $ret) (local.get $l))
      (global.get $ret))

    ;; ok((state, (some(bytes at ptr, len),)))
    (func $reply (param $ptr i32) (param $len i32) (result i32)
      (drop (call $ok (global.get $sd) (global.get $sp) (global.get $sl)))
      (i32.store8 offset=16 (global.get $ret) (i32.const 1))
      (i32.store offset=20 (global.get $ret) (local.get $ptr))
      (i32.store offset=24 (global.get $ret) (local.get $len))
      (global.get $ret))

    ;; "ERR:" + the host's error string, found at $res + off
    (func $err (param $off i32) (result i32)
      (local $sp i32) (local $sl i32) (local $out i32)
      (local.set $sp (i32.load (i32.add (global.get $res) (local.get $off))))
      (local.set $sl (i32.load (i32.add (global.get $res) (i32.add (local.get $off) (i32.const 4)))))
      (local.set $out (call $alloc (i32.add (local.get $sl) (i32.const 4))))
      (memory.copy (local.get $out) (i32.const 96) (i32.const 4))
      (memory.copy (i32.add (local.get $out) (i32.const 4)) (local.get $sp) (local.get $sl))
      (call $reply (local.get $out) (i32.add (local.get $sl) (i32.const 4))))

    (func $failed (result i32)
      (i32.load8_u (global.get $res)))

    ;; "1" or "0" from the bool at $res + 4
    (func $bool (result i32)
      (call $reply (i32.add (i32.const 56) (i32.ne (i32.load8_u offset=4 (global.get $res)) (i32.const 0)))
                   (i32.const 1)))

    ;; decimal digits of v at dst; returns how many
    (func $utoa (param $v i64) (param $dst i32) (result i32)
      (local $n i32) (local $t i64) (local $i i32)
      (local.set $n (i32.const 1))
      (local.set $t (local.get $v))
      (block $done
        (loop $count
          (br_if $done (i64.lt_u (local.get $t) (i64.const 10)))
          (local.set $t (i64.div_u (local.get $t) (i64.const 10)))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (br $count)))
      (local.set $i (local.get $n))
      (loop $digit
        (local.set $i (i32.sub (local.get $i) (i32.const 1)))
        (i32.store8 (i32.add (local.get $dst) (local.get $i))
                    (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $v) (i64.const 10)))))
        (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
        (br_if $digit (i32.gt_s (local.get $i) (i32.const 0))))
      (local.get $n))

    ;; list-dir's entries (ptr, n; 12 bytes each: name ptr, name len, is-file, is-dir) as text
    (func $listing (param $ptr i32) (param $n i32) (result i32)
      (local $i i32) (local $e i32) (local $total i32) (local $out i32) (local $o i32)
      (local.set $i (i32.const 0))
      (block $sized
        (loop $size
          (br_if $sized (i32.ge_u (local.get $i) (local.get $n)))
          (local.set $e (i32.add (local.get $ptr) (i32.mul (local.get $i) (i32.const 12))))
          (local.set $total (i32.add (local.get $total) (i32.add (i32.load offset=4 (local.get $e)) (i32.const 2))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $size)))
      (local.set $out (call $alloc (i32.add (local.get $total) (i32.const 1))))
      (local.set $o (local.get $out))
      (local.set $i (i32.const 0))
      (block $written
        (loop $write
          (br_if $written (i32.ge_u (local.get $i) (local.get $n)))
          (local.set $e (i32.add (local.get $ptr) (i32.mul (local.get $i) (i32.const 12))))
          (if (local.get $i)
            (then
              (i32.store8 (local.get $o) (i32.const 10))
              (local.set $o (i32.add (local.get $o) (i32.const 1)))))
          (memory.copy (local.get $o) (i32.load (local.get $e)) (i32.load offset=4 (local.get $e)))
          (local.set $o (i32.add (local.get $o) (i32.load offset=4 (local.get $e))))
          (if (i32.load8_u offset=9 (local.get $e))
            (then
              (i32.store8 (local.get $o) (i32.const 47))
              (local.set $o (i32.add (local.get $o) (i32.const 1)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $write)))
      (call $reply (local.get $out) (i32.sub (local.get $o) (local.get $out))))

    ;; metadata at $res + 8 (size u64 at +16, is-file at +24, is-dir at +25) as "size=N file=F dir=D"
    (func $meta-text (result i32)
      (local $out i32) (local $o i32)
      (local.set $out (call $alloc (i32.const 64)))
      (memory.copy (local.get $out) (i32.const 72) (i32.const 5))
      (local.set $o (i32.add (local.get $out) (i32.const 5)))
      (local.set $o (i32.add (local.get $o)
        (call $utoa (i64.load offset=24 (global.get $res)) (local.get $o))))
      (memory.copy (local.get $o) (i32.const 80) (i32.const 6))
      (local.set $o (i32.add (local.get $o) (i32.const 6)))
      (i32.store8 (local.get $o) (i32.add (i32.const 48) (i32.load8_u offset=32 (global.get $res))))
      (local.set $o (i32.add (local.get $o) (i32.const 1)))
      (memory.copy (local.get $o) (i32.const 88) (i32.const 5))
      (local.set $o (i32.add (local.get $o) (i32.const 5)))
      (i32.store8 (local.get $o) (i32.add (i32.const 48) (i32.load8_u offset=33 (global.get $res))))
      (local.set $o (i32.add (local.get $o) (i32.const 1)))
      (call $reply (local.get $out) (i32.sub (local.get $o) (local.get $out))))

    (func (export "init") (param $d i32) (param $p i32) (param $l i32) (result i32)
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-send") (param $d i32) (param $p i32) (param $l i32)
          (param $mp i32) (param $ml i32) (result i32)
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-request") (param $d i32) (param $p i32) (param $l i32)
          (param $idp i32) (param $idl i32) (param $mp i32) (param $ml i32) (result i32)
      (local $op i32) (local $pp i32) (local $pl i32) (local $i i32) (local $end i32) (local $cp i32)
      (global.set $sd (local.get $d))
      (global.set $sp (local.get $p))
      (global.set $sl (local.get $l))
      (if (i32.eqz (local.get $ml)) (then (return (call $reply (i32.const 128) (i32.const 17)))))
      (local.set $op (i32.load8_u (local.get $mp)))
      (local.set $pp (i32.add (local.get $mp) (i32.const 1)))
      (local.set $pl (i32.sub (local.get $ml) (i32.const 1)))
      (local.set $end (i32.add (local.get $mp) (local.get $ml)))

      ;; 'w' / 'a': path 0x00 data
      (if (i32.or (i32.eq (local.get $op) (i32.const 119)) (i32.eq (local.get $op) (i32.const 97)))
        (then
          (local.set $i (local.get $pp))
          (block $found
            (loop $scan
              (br_if $found (i32.ge_u (local.get $i) (local.get $end)))
              (br_if $found (i32.eqz (i32.load8_u (local.get $i))))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $scan)))
          (local.set $pl (i32.sub (local.get $i) (local.get $pp)))
          (local.set $cp (select (local.get $end) (i32.add (local.get $i) (i32.const 1))
                                 (i32.ge_u (local.get $i) (local.get $end))))
          (if (i32.eq (local.get $op) (i32.const 119))
            (then (call $write (local.get $pp) (local.get $pl) (local.get $cp)
                               (i32.sub (local.get $end) (local.get $cp)) (global.get $res)))
            (else (call $append (local.get $pp) (local.get $pl) (local.get $cp)
                                (i32.sub (local.get $end) (local.get $cp)) (global.get $res))))
          (if (call $failed) (then (return (call $err (i32.const 4)))))
          (return (call $reply (i32.const 64) (i32.const 2)))))

      ;; 'r' read-file
      (if (i32.eq (local.get $op) (i32.const 114))
        (then
          (call $read (local.get $pp) (local.get $pl) (global.get $res))
          (if (call $failed) (then (return (call $err (i32.const 4)))))
          (return (call $reply (i32.load offset=4 (global.get $res)) (i32.load offset=8 (global.get $res))))))

      ;; 'n' read-file, replying the size
      (if (i32.eq (local.get $op) (i32.const 110))
        (then
          (call $read (local.get $pp) (local.get $pl) (global.get $res))
          (if (call $failed) (then (return (call $err (i32.const 4)))))
          (local.set $i (call $alloc (i32.const 16)))
          (return (call $reply (local.get $i)
            (call $utoa (i64.extend_i32_u (i32.load offset=8 (global.get $res))) (local.get $i))))))

      ;; 'x' exists, 'f' is-file, 'd' is-dir
      (if (i32.eq (local.get $op) (i32.const 120))
        (then (call $exists (local.get $pp) (local.get $pl) (global.get $res))
              (if (call $failed) (then (return (call $err (i32.const 4)))))
              (return (call $bool))))
      (if (i32.eq (local.get $op) (i32.const 102))
        (then (call $is-file (local.get $pp) (local.get $pl) (global.get $res))
              (if (call $failed) (then (return (call $err (i32.const 4)))))
              (return (call $bool))))
      (if (i32.eq (local.get $op) (i32.const 100))
        (then (call $is-dir (local.get $pp) (local.get $pl) (global.get $res))
              (if (call $failed) (then (return (call $err (i32.const 4)))))
              (return (call $bool))))

      ;; 'c' create-dir, 'u' remove-file, 'v' remove-dir
      (if (i32.eq (local.get $op) (i32.const 99))
        (then (call $create-dir (local.get $pp) (local.get $pl) (global.get $res))
              (if (call $failed) (then (return (call $err (i32.const 4)))))
              (return (call $reply (i32.const 64) (i32.const 2)))))
      (if (i32.eq (local.get $op) (i32.const 117))
        (then (call $remove-file (local.get $pp) (local.get $pl) (global.get $res))
              (if (call $failed) (then (return (call $err (i32.const 4)))))
              (return (call $reply (i32.const 64) (i32.const 2)))))
      (if (i32.eq (local.get $op) (i32.const 118))
        (then (call $remove-dir (local.get $pp) (local.get $pl) (global.get $res))
              (if (call $failed) (then (return (call $err (i32.const 4)))))
              (return (call $reply (i32.const 64) (i32.const 2)))))

      ;; 'l' list-dir
      (if (i32.eq (local.get $op) (i32.const 108))
        (then (call $list-dir (local.get $pp) (local.get $pl) (global.get $res))
              (if (call $failed) (then (return (call $err (i32.const 4)))))
              (return (call $listing (i32.load offset=4 (global.get $res)) (i32.load offset=8 (global.get $res))))))

      ;; 'm' metadata: result<file-metadata, string> puts its payload at +8 (the record is 8-aligned)
      (if (i32.eq (local.get $op) (i32.const 109))
        (then (call $metadata (local.get $pp) (local.get $pl) (global.get $res))
              (if (call $failed) (then (return (call $err (i32.const 8)))))
              (return (call $meta-text))))

      (call $reply (i32.const 104) (i32.const 14))))

  (core instance $a (instantiate $actor
    (with "mem" (instance $mem))
    (with "fs" (instance
      (export "read-file" (func $read))
      (export "write-file" (func $write))
      (export "append-file" (func $append))
      (export "exists" (func $exists))
      (export "is-file" (func $is-file))
      (export "is-dir" (func $is-dir))
      (export "create-dir" (func $create-dir))
      (export "remove-file" (func $remove-file))
      (export "remove-dir" (func $remove-dir))
      (export "list-dir" (func $list-dir))
      (export "metadata" (func $metadata))))))

  (func $init (param "state" (option (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "init") (memory $memory) (realloc $realloc)
      (post-return (core func $mem "reset"))))
  (func $send (param "state" (option (list u8))) (param "params" (tuple (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "handle-send") (memory $memory) (realloc $realloc)
      (post-return (core func $mem "reset"))))
  (func $request (param "state" (option (list u8))) (param "params" (tuple string (list u8)))
    (result (result (tuple (option (list u8)) (tuple (option (list u8)))) (error string)))
    (canon lift (core func $a "handle-request") (memory $memory) (realloc $realloc)
      (post-return (core func $mem "reset"))))

  (instance $actor-exports (export "init" (func $init)))
  (instance $msc-exports
    (export "handle-send" (func $send))
    (export "handle-request" (func $request)))
  (export "theater:simple/actor" (instance $actor-exports))
  (export "theater:simple/message-server-client" (instance $msc-exports))
)
