# char_lm_test.cmake — ctest driver of char_lm on a generated text (no data is
# shipped): writes WORK_DIR/generated.txt, sentences of a small grammar picked
# by a fixed linear congruential generator (about 40 KB, unigram entropy about
# 2.7 nats/char), then
#
#   MODE=run     trains each model of MODELS for a few steps; char_lm exits 1
#                unless every validation loss is below --max-loss (MAX_LOSS),
#                which lies well below the text's unigram entropy: it learned.
#   MODE=resume  trains STEPS steps in one go, then the same run stopped after
#                STEPS/2 steps with --save and continued with --resume; the two
#                final validation losses must be equal (the same batches and
#                optimizer state: the resumed run is the uninterrupted one).
#
#   cmake -DCHAR_LM=path/to/char_lm -DWORK_DIR=dir -DMODE=run|resume
#         [-DMODELS=dense,switch] [-DSTEPS=n] [-DMAX_LOSS=x]
#         [-DLAUNCH="mpirun;-np;2" -DRANKS=2] -P char_lm_test.cmake
#
# LAUNCH/RANKS: run every char_lm under the launcher with --ranks RANKS
# (checkpoints are then sharded: <file>.<rank>-of-<RANKS>.safetensors).
cmake_minimum_required(VERSION 3.25)
foreach(var CHAR_LM WORK_DIR MODE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "char_lm_test.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT DEFINED MODELS)
  set(MODELS dense)
endif()
if(NOT DEFINED STEPS)
  set(STEPS 120)
endif()
if(NOT DEFINED MAX_LOSS)
  set(MAX_LOSS 1.5)
endif()

file(MAKE_DIRECTORY "${WORK_DIR}")
set(text_file "${WORK_DIR}/generated.txt")
set(subjects "the king" "a fool" "my lord" "the queen" "his horse" "our friend" "that man" "the guard")
set(verbs "sees" "loves" "hates" "calls" "follows" "fears" "finds" "serves")
set(objects "the sea." "a crown." "the night." "his sword." "her heart." "the town." "no one." "the sun.")
set(text "")
set(state 12345)
foreach(i RANGE 1 1600)
  set(line "")
  foreach(list subjects verbs objects)
    math(EXPR state "(${state} * 1103515245 + 12345) % 2147483648")
    math(EXPR pick "(${state} / 65536) % 8")
    list(GET ${list} ${pick} word)
    string(APPEND line "${word} ")
  endforeach()
  string(STRIP "${line}" line)
  string(APPEND text "${line}\n")
endforeach()
file(WRITE "${text_file}" "${text}")

set(common --data "${text_file}" --d-model 32 --layers 1 --heads 2 --seq 32 --batch 16 --experts 4
           --granularity 2 --warmup 10 --lr 5e-3 --threads 1)

if(DEFINED RANKS)
  list(APPEND common --ranks ${RANKS})
endif()

function(run_char_lm out_var)
  execute_process(COMMAND ${LAUNCH} "${CHAR_LM}" ${common} ${ARGN}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message("${out}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "char_lm ${ARGN} exited with ${rc}:\n${err}")
  endif()
  string(REGEX MATCH "\"val_loss\": ([0-9.]+)" _ "${out}")
  set(${out_var} "${CMAKE_MATCH_1}" PARENT_SCOPE)
endfunction()

if(MODE STREQUAL "run")
  run_char_lm(loss --model ${MODELS} --steps ${STEPS} --max-loss ${MAX_LOSS})
elseif(MODE STREQUAL "resume")
  math(EXPR half "${STEPS} / 2")
  set(ckpt "${WORK_DIR}/resume.safetensors")
  file(GLOB old "${ckpt}*")
  if(old)
    file(REMOVE ${old})
  endif()
  run_char_lm(straight --model ${MODELS} --steps ${STEPS})
  run_char_lm(first_half --model ${MODELS} --steps ${STEPS} --stop-after ${half} --save "${ckpt}")
  file(GLOB written "${ckpt}*")
  if(NOT written)
    message(FATAL_ERROR "char_lm --save ${ckpt} wrote no checkpoint")
  endif()
  run_char_lm(resumed --model ${MODELS} --steps ${STEPS} --resume "${ckpt}")
  if(straight STREQUAL "" OR NOT straight STREQUAL resumed)
    message(FATAL_ERROR "resumed run's validation loss ${resumed} != uninterrupted run's ${straight}")
  endif()
  message("resume: validation loss ${resumed} == uninterrupted ${straight} (stopped at step ${half} of ${STEPS})")
else()
  message(FATAL_ERROR "char_lm_test.cmake: MODE must be run or resume")
endif()
