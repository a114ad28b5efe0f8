# Builds the HLS project: C simulation, synthesis, co-simulation and IP export.
#
#   vitis-run --mode hls --tcl build.tcl              (Vitis 2023.2 and later)
#   vitis_hls -f build.tcl -tclargs csim=1 synth=1 cosim=1 export=1
#
# Options (name=0|1): reset csim synth cosim export, after -tclargs or in the environment variable
# QFX_BUILD_OPTIONS (what `qfx build` sets).  Defaults: csim and synth.
# Part, clock and file lists come from project.tcl, generated for the board.

set here [file dirname [file normalize [info script]]]
source [file join $here project.tcl]

array set option {reset 1 csim 1 synth 1 cosim 0 export 0}
set arguments $argv
if {[info exists ::env(QFX_BUILD_OPTIONS)]} {
    set arguments [concat $::env(QFX_BUILD_OPTIONS) $arguments]
}
foreach arg $arguments {
    set pair [split $arg =]
    set name [lindex $pair 0]
    if {[llength $pair] != 2 || ![info exists option($name)]} {
        error "build.tcl: unknown option '$arg'; use name=0|1 with name among: [lsort [array names option]]"
    }
    set option($name) [lindex $pair 1]
}

cd $here
set cflags "-std=c++14 -I[file join $here firmware]"
if {$option(reset)} {
    open_project -reset ${qfx_top}_prj
} else {
    open_project ${qfx_top}_prj
}
set_top $qfx_top
foreach file $qfx_firmware_files {
    add_files [file join $here $file] -cflags $cflags
}
foreach file $qfx_tb_files {
    add_files -tb [file join $here $file] -cflags "$cflags -DQFX_TRACE"
}
open_solution -reset solution1 -flow_target vivado
set_part $qfx_part
create_clock -period $qfx_clock_period -name default

set data [file join $here $qfx_data_dir]
if {$option(csim)} {
    csim_design -argv $data
}
if {$option(synth)} {
    csynth_design
}
if {$option(cosim)} {
    cosim_design -argv $data
}
if {$option(export)} {
    export_design -format ip_catalog -vendor $qfx_ip_vendor -library $qfx_ip_library -version $qfx_ip_version \
        -ipname $qfx_top
}
exit
