// Simulation model of the ECP5 DP16KD block RAM for post-synthesis simulation (scripts/postsim).
// The YoWASP yosys's ecp5/cells_sim.v declares DP16KD as a (* blackbox *) with no behaviour, so
// a netlist simulated with it reads zeros from every block RAM. This model follows Lattice
// TN1264 for what yosys's brams_map_16kd.v emits: both ports the same width (1, 2, 4, 9 or 18;
// the word address is AD[13:k] with k = 0, 1, 2, 3, 4), byte enables on AD[1:0] at x18, chip
// select against CSDECODE, clock enables, WRITEMODE NORMAL / WRITETHROUGH / READBEFOREWRITE,
// REGMODE NOREG / OUTREG (with OCE), RST clearing the output (modelled synchronously). It starts
// cleared. What it does not model stops the simulation at time 0 instead of simulating wrongly:
// different widths on the two ports, x36, inverted clocks, and non-zero INITVAL.
// A read of a word the other port writes on the same edge gives the old word (undefined in
// hardware; the RTL never does it: its memories are marked no_rw_check).
module DP16KD(
    DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0,
    ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0,
    CEA, OCEA, CLKA, WEA, CSA2, CSA1, CSA0, RSTA,
    DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0,
    ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0,
    CEB, OCEB, CLKB, WEB, CSB2, CSB1, CSB0, RSTB,
    DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0,
    DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0);
    input DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0;
    input ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0;
    input CEA, OCEA, CLKA, WEA, CSA2, CSA1, CSA0, RSTA;
    output DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0;
    input DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0;
    input ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0;
    input CEB, OCEB, CLKB, WEB, CSB2, CSB1, CSB0, RSTB;
    output DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0;
    parameter DATA_WIDTH_A = 18;
    parameter DATA_WIDTH_B = 18;
    parameter REGMODE_A = "NOREG";
    parameter REGMODE_B = "NOREG";
    parameter RESETMODE = "SYNC";
    parameter ASYNC_RESET_RELEASE = "SYNC";
    parameter CSDECODE_A = "0b000";
    parameter CSDECODE_B = "0b000";
    parameter WRITEMODE_A = "NORMAL";
    parameter WRITEMODE_B = "NORMAL";
    parameter GSR = "ENABLED";
    parameter WID = 0;
    parameter DIA17MUX = "DIA17";
    parameter DIA16MUX = "DIA16";
    parameter DIA15MUX = "DIA15";
    parameter DIA14MUX = "DIA14";
    parameter DIA13MUX = "DIA13";
    parameter DIA12MUX = "DIA12";
    parameter DIA11MUX = "DIA11";
    parameter DIA10MUX = "DIA10";
    parameter DIA9MUX = "DIA9";
    parameter DIA8MUX = "DIA8";
    parameter DIA7MUX = "DIA7";
    parameter DIA6MUX = "DIA6";
    parameter DIA5MUX = "DIA5";
    parameter DIA4MUX = "DIA4";
    parameter DIA3MUX = "DIA3";
    parameter DIA2MUX = "DIA2";
    parameter DIA1MUX = "DIA1";
    parameter DIA0MUX = "DIA0";
    parameter ADA13MUX = "ADA13";
    parameter ADA12MUX = "ADA12";
    parameter ADA11MUX = "ADA11";
    parameter ADA10MUX = "ADA10";
    parameter ADA9MUX = "ADA9";
    parameter ADA8MUX = "ADA8";
    parameter ADA7MUX = "ADA7";
    parameter ADA6MUX = "ADA6";
    parameter ADA5MUX = "ADA5";
    parameter ADA4MUX = "ADA4";
    parameter ADA3MUX = "ADA3";
    parameter ADA2MUX = "ADA2";
    parameter ADA1MUX = "ADA1";
    parameter ADA0MUX = "ADA0";
    parameter CEAMUX = "CEA";
    parameter OCEAMUX = "OCEA";
    parameter CLKAMUX = "CLKA";
    parameter WEAMUX = "WEA";
    parameter RSTAMUX = "RSTA";
    parameter CSA2MUX = "CSA2";
    parameter CSA1MUX = "CSA1";
    parameter CSA0MUX = "CSA0";
    parameter DOA17MUX = "DOA17";
    parameter DOA16MUX = "DOA16";
    parameter DOA15MUX = "DOA15";
    parameter DOA14MUX = "DOA14";
    parameter DOA13MUX = "DOA13";
    parameter DOA12MUX = "DOA12";
    parameter DOA11MUX = "DOA11";
    parameter DOA10MUX = "DOA10";
    parameter DOA9MUX = "DOA9";
    parameter DOA8MUX = "DOA8";
    parameter DOA7MUX = "DOA7";
    parameter DOA6MUX = "DOA6";
    parameter DOA5MUX = "DOA5";
    parameter DOA4MUX = "DOA4";
    parameter DOA3MUX = "DOA3";
    parameter DOA2MUX = "DOA2";
    parameter DOA1MUX = "DOA1";
    parameter DOA0MUX = "DOA0";
    parameter DIB17MUX = "DIB17";
    parameter DIB16MUX = "DIB16";
    parameter DIB15MUX = "DIB15";
    parameter DIB14MUX = "DIB14";
    parameter DIB13MUX = "DIB13";
    parameter DIB12MUX = "DIB12";
    parameter DIB11MUX = "DIB11";
    parameter DIB10MUX = "DIB10";
    parameter DIB9MUX = "DIB9";
    parameter DIB8MUX = "DIB8";
    parameter DIB7MUX = "DIB7";
    parameter DIB6MUX = "DIB6";
    parameter DIB5MUX = "DIB5";
    parameter DIB4MUX = "DIB4";
    parameter DIB3MUX = "DIB3";
    parameter DIB2MUX = "DIB2";
    parameter DIB1MUX = "DIB1";
    parameter DIB0MUX = "DIB0";
    parameter ADB13MUX = "ADB13";
    parameter ADB12MUX = "ADB12";
    parameter ADB11MUX = "ADB11";
    parameter ADB10MUX = "ADB10";
    parameter ADB9MUX = "ADB9";
    parameter ADB8MUX = "ADB8";
    parameter ADB7MUX = "ADB7";
    parameter ADB6MUX = "ADB6";
    parameter ADB5MUX = "ADB5";
    parameter ADB4MUX = "ADB4";
    parameter ADB3MUX = "ADB3";
    parameter ADB2MUX = "ADB2";
    parameter ADB1MUX = "ADB1";
    parameter ADB0MUX = "ADB0";
    parameter CEBMUX = "CEB";
    parameter OCEBMUX = "OCEB";
    parameter CLKBMUX = "CLKB";
    parameter WEBMUX = "WEB";
    parameter RSTBMUX = "RSTB";
    parameter CSB2MUX = "CSB2";
    parameter CSB1MUX = "CSB1";
    parameter CSB0MUX = "CSB0";
    parameter DOB17MUX = "DOB17";
    parameter DOB16MUX = "DOB16";
    parameter DOB15MUX = "DOB15";
    parameter DOB14MUX = "DOB14";
    parameter DOB13MUX = "DOB13";
    parameter DOB12MUX = "DOB12";
    parameter DOB11MUX = "DOB11";
    parameter DOB10MUX = "DOB10";
    parameter DOB9MUX = "DOB9";
    parameter DOB8MUX = "DOB8";
    parameter DOB7MUX = "DOB7";
    parameter DOB6MUX = "DOB6";
    parameter DOB5MUX = "DOB5";
    parameter DOB4MUX = "DOB4";
    parameter DOB3MUX = "DOB3";
    parameter DOB2MUX = "DOB2";
    parameter DOB1MUX = "DOB1";
    parameter DOB0MUX = "DOB0";
    parameter [319:0] INITVAL_00 = 320'h0;
    parameter [319:0] INITVAL_01 = 320'h0;
    parameter [319:0] INITVAL_02 = 320'h0;
    parameter [319:0] INITVAL_03 = 320'h0;
    parameter [319:0] INITVAL_04 = 320'h0;
    parameter [319:0] INITVAL_05 = 320'h0;
    parameter [319:0] INITVAL_06 = 320'h0;
    parameter [319:0] INITVAL_07 = 320'h0;
    parameter [319:0] INITVAL_08 = 320'h0;
    parameter [319:0] INITVAL_09 = 320'h0;
    parameter [319:0] INITVAL_0A = 320'h0;
    parameter [319:0] INITVAL_0B = 320'h0;
    parameter [319:0] INITVAL_0C = 320'h0;
    parameter [319:0] INITVAL_0D = 320'h0;
    parameter [319:0] INITVAL_0E = 320'h0;
    parameter [319:0] INITVAL_0F = 320'h0;
    parameter [319:0] INITVAL_10 = 320'h0;
    parameter [319:0] INITVAL_11 = 320'h0;
    parameter [319:0] INITVAL_12 = 320'h0;
    parameter [319:0] INITVAL_13 = 320'h0;
    parameter [319:0] INITVAL_14 = 320'h0;
    parameter [319:0] INITVAL_15 = 320'h0;
    parameter [319:0] INITVAL_16 = 320'h0;
    parameter [319:0] INITVAL_17 = 320'h0;
    parameter [319:0] INITVAL_18 = 320'h0;
    parameter [319:0] INITVAL_19 = 320'h0;
    parameter [319:0] INITVAL_1A = 320'h0;
    parameter [319:0] INITVAL_1B = 320'h0;
    parameter [319:0] INITVAL_1C = 320'h0;
    parameter [319:0] INITVAL_1D = 320'h0;
    parameter [319:0] INITVAL_1E = 320'h0;
    parameter [319:0] INITVAL_1F = 320'h0;
    parameter [319:0] INITVAL_20 = 320'h0;
    parameter [319:0] INITVAL_21 = 320'h0;
    parameter [319:0] INITVAL_22 = 320'h0;
    parameter [319:0] INITVAL_23 = 320'h0;
    parameter [319:0] INITVAL_24 = 320'h0;
    parameter [319:0] INITVAL_25 = 320'h0;
    parameter [319:0] INITVAL_26 = 320'h0;
    parameter [319:0] INITVAL_27 = 320'h0;
    parameter [319:0] INITVAL_28 = 320'h0;
    parameter [319:0] INITVAL_29 = 320'h0;
    parameter [319:0] INITVAL_2A = 320'h0;
    parameter [319:0] INITVAL_2B = 320'h0;
    parameter [319:0] INITVAL_2C = 320'h0;
    parameter [319:0] INITVAL_2D = 320'h0;
    parameter [319:0] INITVAL_2E = 320'h0;
    parameter [319:0] INITVAL_2F = 320'h0;
    parameter [319:0] INITVAL_30 = 320'h0;
    parameter [319:0] INITVAL_31 = 320'h0;
    parameter [319:0] INITVAL_32 = 320'h0;
    parameter [319:0] INITVAL_33 = 320'h0;
    parameter [319:0] INITVAL_34 = 320'h0;
    parameter [319:0] INITVAL_35 = 320'h0;
    parameter [319:0] INITVAL_36 = 320'h0;
    parameter [319:0] INITVAL_37 = 320'h0;
    parameter [319:0] INITVAL_38 = 320'h0;
    parameter [319:0] INITVAL_39 = 320'h0;
    parameter [319:0] INITVAL_3A = 320'h0;
    parameter [319:0] INITVAL_3B = 320'h0;
    parameter [319:0] INITVAL_3C = 320'h0;
    parameter [319:0] INITVAL_3D = 320'h0;
    parameter [319:0] INITVAL_3E = 320'h0;
    parameter [319:0] INITVAL_3F = 320'h0;

    localparam W = DATA_WIDTH_A;
    localparam K = W == 18 ? 4 : W == 9 ? 3 : W == 4 ? 2 : W == 2 ? 1 : 0;
    localparam DEPTH = 1 << (14 - K);
    wire [319:0] init_any = INITVAL_00 | INITVAL_01 | INITVAL_02 | INITVAL_03 | INITVAL_04 | INITVAL_05 | INITVAL_06 | INITVAL_07 | INITVAL_08 | INITVAL_09 | INITVAL_0A | INITVAL_0B | INITVAL_0C | INITVAL_0D | INITVAL_0E | INITVAL_0F | INITVAL_10 | INITVAL_11 | INITVAL_12 | INITVAL_13 | INITVAL_14 | INITVAL_15 | INITVAL_16 | INITVAL_17 | INITVAL_18 | INITVAL_19 | INITVAL_1A | INITVAL_1B | INITVAL_1C | INITVAL_1D | INITVAL_1E | INITVAL_1F | INITVAL_20 | INITVAL_21 | INITVAL_22 | INITVAL_23 | INITVAL_24 | INITVAL_25 | INITVAL_26 | INITVAL_27 | INITVAL_28 | INITVAL_29 | INITVAL_2A | INITVAL_2B | INITVAL_2C | INITVAL_2D | INITVAL_2E | INITVAL_2F | INITVAL_30 | INITVAL_31 | INITVAL_32 | INITVAL_33 | INITVAL_34 | INITVAL_35 | INITVAL_36 | INITVAL_37 | INITVAL_38 | INITVAL_39 | INITVAL_3A | INITVAL_3B | INITVAL_3C | INITVAL_3D | INITVAL_3E | INITVAL_3F;

    reg [W-1:0] mem [0:DEPTH-1];
    integer i;
    initial begin
        if (DATA_WIDTH_A != DATA_WIDTH_B || !(W == 1 || W == 2 || W == 4 || W == 9 || W == 18))
            $fatal(1, "DP16KD model: DATA_WIDTH_A %0d / DATA_WIDTH_B %0d not modelled (equal widths of 1, 2, 4, 9 or 18 only)", DATA_WIDTH_A, DATA_WIDTH_B);
        if (CLKAMUX != "CLKA" || CLKBMUX != "CLKB")
            $fatal(1, "DP16KD model: inverted clocks not modelled");
        if (init_any != 0)
            $fatal(1, "DP16KD model: non-zero INITVAL not modelled");
        for (i = 0; i < DEPTH; i = i + 1) mem[i] = {W{1'b0}};
    end

    // The two ports, index 0 = A and 1 = B, share one description.
    wire [17:0] di [0:1];
    wire [13:0] ad [0:1];
    wire [2:0] cs [0:1], csdecode [0:1];
    assign di[0] = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
    assign di[1] = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0};
    assign ad[0] = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0};
    assign ad[1] = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0};
    assign cs[0] = {CSA2, CSA1, CSA0};
    assign cs[1] = {CSB2, CSB1, CSB0};
    // CSDECODE_x is a string "0bXYZ": bit 0 of each character is the digit
    assign csdecode[0] = {CSDECODE_A[16], CSDECODE_A[8], CSDECODE_A[0]};
    assign csdecode[1] = {CSDECODE_B[16], CSDECODE_B[8], CSDECODE_B[0]};
    wire [1:0] clk = {CLKB, CLKA}, ce = {CEB, CEA}, oce = {OCEB, OCEA}, we = {WEB, WEA}, rst = {RSTB, RSTA};
    wire [1:0] read_before_write = {WRITEMODE_B == "READBEFOREWRITE", WRITEMODE_A == "READBEFOREWRITE"};
    wire [1:0] write_through = {WRITEMODE_B == "WRITETHROUGH", WRITEMODE_A == "WRITETHROUGH"};
    wire [1:0] out_reg = {REGMODE_B == "OUTREG", REGMODE_A == "OUTREG"};
    wire [W-1:0] dout [0:1];

    genvar p;
    generate for (p = 0; p < 2; p = p + 1) begin : port
        wire [13-K:0] wa = ad[p][13:K];
        // x18: AD[1:0] enable the low and the high 9-bit byte
        wire [17:0] be = W == 18 ? {{9{ad[p][1]}}, {9{ad[p][0]}}} : {18{1'b1}};
        wire [W-1:0] merged = (mem[wa] & ~be[W-1:0]) | (di[p][W-1:0] & be[W-1:0]);
        reg [W-1:0] q = 0, r = 0;
        always @(posedge clk[p]) begin
            if (rst[p]) begin
                q <= 0;
            end else if (ce[p] && cs[p] == csdecode[p]) begin
                if (we[p]) begin
                    mem[wa] <= merged;
                    if (read_before_write[p]) q <= mem[wa];
                    else if (write_through[p]) q <= merged;
                end else begin
                    q <= mem[wa];
                end
            end
            if (rst[p]) r <= 0;
            else if (oce[p]) r <= q;
        end
        assign dout[p] = out_reg[p] ? r : q;
    end endgenerate

    assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = {{(18 - W){1'b0}}, dout[0]};
    assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0} = {{(18 - W){1'b0}}, dout[1]};

endmodule
